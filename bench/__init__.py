"""Load benchmark of the users service: ``python -m bench`` (or ``make bench``)."""
