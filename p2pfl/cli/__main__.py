from p2pfl.cli.main import main

main()
