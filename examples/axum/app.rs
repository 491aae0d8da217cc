//! The application of `examples/axum`: a small JSON API with shared state,
//! tower-http's tracing and compression. It knows nothing of the runtime:
//! `main.rs` serves it on Fulcrum, and `benches/axum` serves the very same
//! router with `axum::serve` on tokio for the side-by-side benchmark.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tower_http::compression::CompressionLayer;
use tower_http::trace::TraceLayer;

/// What every request shares.
#[derive(Default)]
pub struct AppState {
    items: RwLock<BTreeMap<u64, Item>>,
    next_id: AtomicU64,
}

/// An item of the API.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Item {
    pub id: u64,
    pub name: String,
    pub tags: Vec<String>,
}

/// The body of `POST /api/items`.
#[derive(Debug, Deserialize)]
pub struct NewItem {
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl AppState {
    /// A state with `n` items in it.
    pub fn with_items(n: u64) -> Arc<Self> {
        let state = Arc::new(Self::default());
        for i in 0..n {
            state.insert(NewItem {
                name: format!("item {i}"),
                tags: vec!["seed".into()],
            });
        }
        state
    }

    fn insert(&self, new: NewItem) -> Item {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let item = Item {
            id,
            name: new.name,
            tags: new.tags,
        };
        let mut items = self.items.write().unwrap_or_else(|e| e.into_inner());
        items.insert(id, item.clone());
        item
    }
}

async fn list(State(state): State<Arc<AppState>>) -> Json<Vec<Item>> {
    let items = state.items.read().unwrap_or_else(|e| e.into_inner());
    Json(items.values().cloned().collect())
}

async fn create(
    State(state): State<Arc<AppState>>,
    Json(new): Json<NewItem>,
) -> (StatusCode, Json<Item>) {
    (StatusCode::CREATED, Json(state.insert(new)))
}

async fn read(
    State(state): State<Arc<AppState>>,
    Path(id): Path<u64>,
) -> Result<Json<Item>, StatusCode> {
    let items = state.items.read().unwrap_or_else(|e| e.into_inner());
    items
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or(StatusCode::NOT_FOUND)
}

async fn delete(State(state): State<Arc<AppState>>, Path(id): Path<u64>) -> StatusCode {
    let mut items = state.items.write().unwrap_or_else(|e| e.into_inner());
    match items.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT,
        None => StatusCode::NOT_FOUND,
    }
}

/// The router: `GET /health`, `GET|POST /api/items`,
/// `GET|DELETE /api/items/{id}`, traced and compressed.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/api/items", get(list).post(create))
        .route("/api/items/{id}", get(read).delete(delete))
        .layer(TraceLayer::new_for_http())
        .layer(CompressionLayer::new())
        .with_state(state)
}
