from polykey.cli.main import main

main()
