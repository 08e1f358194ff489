from tensorguard.cli import main

main()
