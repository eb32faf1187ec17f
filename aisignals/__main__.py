from aisignals.cli import main

main()
