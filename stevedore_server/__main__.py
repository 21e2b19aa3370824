from stevedore_server.cli import main

main()
