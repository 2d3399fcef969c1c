"""`python -m samples.grpc_department` runs the SAMPLE department integration that pulls work orders over gRPC."""

from samples.grpc_department.client import main

main()
