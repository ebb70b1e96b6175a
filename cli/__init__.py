"""The `robolake` command line (cli.main). It sits above every stage: it names each
command's module and imports it only when that command runs."""
