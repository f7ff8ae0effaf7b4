//! `--admin ADDR`: a read-only HTTP endpoint for probes, Prometheus and a person. `http` parses
//! requests and writes responses (with the Host check against DNS rebinding); `bind` makes its
//! listening socket; `server` is the thread that serves them (its connections and their limits);
//! `answering` is how that thread routes a request and gets its answer from the supervisor loop
//! or the cache; `peers` decides which connections it keeps when too many come; `cache` is the
//! copy `/status`, `/metrics` and `/` are served from, and the thread that builds it; `probes`
//! decides `/livez` and `/readyz`; `metrics` writes the Prometheus and OpenMetrics texts; `page`
//! is the status page.

mod answering;
pub mod bind;
pub mod cache;
pub mod http;
pub mod metrics;
pub mod page;
pub mod peers;
pub mod probes;
pub mod server;
