"""Great Expectations suites as code, micro-batch validation, quarantine and reports."""
