from tensorguard.cli import run

run()
