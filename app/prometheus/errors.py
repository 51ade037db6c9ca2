"""What can go wrong when talking to Prometheus, as a small exception tree."""


class PrometheusError(Exception):
    """Base class: Prometheus could not give us an answer we can use."""


class PrometheusUnavailableError(PrometheusError):
    """Prometheus could not be reached, or said it is unavailable."""


class PrometheusTimeoutError(PrometheusError):
    """Prometheus (or the path to it) did not answer within the time allowed."""


class PrometheusQueryError(PrometheusError):
    """Prometheus answered with `status: error` for a query."""

    def __init__(self, message: str, error_type: str | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type


class PrometheusBadResponseError(PrometheusError):
    """Prometheus (or a proxy in front of it) answered with something that is not its API."""
