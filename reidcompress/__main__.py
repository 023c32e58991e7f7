from reidcompress.cli import main

main()
