//! `--admin ADDR`: a read-only HTTP endpoint for probes, Prometheus and a person. `http` parses
//! requests and writes responses (with the Host check against DNS rebinding); `server` is the
//! thread that serves them and asks the supervisor loop; `probes` decides `/livez` and
//! `/readyz`; `metrics` writes the Prometheus and OpenMetrics texts; `page` is the status page.

pub mod http;
pub mod metrics;
pub mod page;
pub mod probes;
pub mod server;
