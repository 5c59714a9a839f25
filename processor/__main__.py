from processor.cli import entry

entry()
