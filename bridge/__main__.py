from bridge.runner import main

main()
