from capslab.cli.main import main

main()
