from otameter.cli import main

main()
