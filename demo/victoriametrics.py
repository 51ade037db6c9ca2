"""Start and stop a real VictoriaMetrics (single node) for tests, scraping like Prometheus.

It reads the same scrape configuration (file_sd targets, honor_labels, one
`__metrics_path__` per target) that PrometheusServer writes, and answers the Prometheus
API under /prometheus: the URL the app is given is `url`, with that prefix.
"""

from __future__ import annotations

from demo.prometheus import PrometheusServer, find_binary

DEBIAN_PACKAGE = "victoria-metrics"
BINARY_ENV = "VICTORIA_METRICS_BINARY"
_DEFAULT_PATHS = ("/usr/bin/victoria-metrics", "/usr/local/bin/victoria-metrics")


def find_victoria_metrics_binary(binary: str | None = None) -> str:
    """The victoria-metrics binary, or PrometheusNotInstalledError naming the package."""
    return find_binary("victoria-metrics", DEBIAN_PACKAGE, BINARY_ENV, _DEFAULT_PATHS, binary)


class VictoriaMetricsServer(PrometheusServer):
    """A real single-node VictoriaMetrics scraping `targets`; use as a context manager."""

    api_prefix = "/prometheus"
    ready_path = "/health"

    def find_binary(self, binary: str | None) -> str:
        return find_victoria_metrics_binary(binary)

    def _serves_our_workdir(self) -> bool:
        """Tell whether the server on our port is the one storing in our workdir."""
        flags = self._session.get(f"{self.root_url}/flags", timeout=1.0)
        return flags.ok and f'-storageDataPath="{self.workdir / "data"}"' in flags.text

    def command(self, binary: str) -> list[str]:
        workdir = self.workdir
        return [
            binary,
            f"-promscrape.config={workdir / 'prometheus.yml'}",
            f"-storageDataPath={workdir / 'data'}",
            f"-httpListenAddr=127.0.0.1:{self._port}",
            "-retentionPeriod=1d",
            "-loggerOutput=stdout",
            # The shared configuration has Prometheus' evaluation_interval: not ours.
            "-promscrape.config.strictParse=false",
            # Samples are visible to queries after 30 s by default, so that slow remote
            # writers have landed; here every sample comes from its own scrapes at once.
            "-search.latencyOffset=1s",
            # A test asks again after changing the world; no answer may come from a cache.
            "-search.disableCache",
        ]
