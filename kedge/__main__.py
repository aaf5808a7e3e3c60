from kedge.cli.main import main

main()
