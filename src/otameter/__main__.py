from otameter.cli import main

# Guarded: processes started with "spawn" import the main module again.
if __name__ == "__main__":
    main()
