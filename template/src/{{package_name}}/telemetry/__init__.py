"""What operators see of the service besides its logs: metrics (`metrics.py`, and the sinks
`prometheus.py` and, on AWS Lambda, `emf.py`) and traces (`tracing.py`)."""
