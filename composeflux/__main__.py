from composeflux.cli import main

main(prog_name="composeflux")
