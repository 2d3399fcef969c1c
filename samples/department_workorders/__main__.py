"""`python -m samples.department_workorders` runs the sample department work-order system."""

from samples.department_workorders.app import main

main()
