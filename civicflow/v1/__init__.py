"""Generated gRPC stubs for proto/civicflow/v1 (make proto); never edit by hand."""
