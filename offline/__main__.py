from offline.cli import app

app()
