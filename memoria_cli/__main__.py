from memoria_cli.app import main

main()
