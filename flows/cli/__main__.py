from lifeline.flows.cli import main

main()
