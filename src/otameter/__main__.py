# Guarded, import included: processes started with "spawn" (the import's parsing processes)
# import the main module again, and need none of the command-line interface.
if __name__ == "__main__":
    from otameter.cli import main

    main()
