//! State shared by every request.

use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

pub struct App {
    pub config: Config,
    pub store: Store,
    pub metrics: Arc<Metrics>,
}
