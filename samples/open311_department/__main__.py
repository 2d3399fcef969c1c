"""`python -m samples.open311_department` runs the SAMPLE Open311 server."""

from samples.open311_department.app import main

main()
