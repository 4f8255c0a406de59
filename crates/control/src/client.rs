//! A blocking client of the API, used by `switchboard ctl`, tests and demos.
//!
//! Methods return the server's JSON as a [`Value`] (what `switchboard ctl` prints); its shape
//! is the matching type of [`crate::api`], and [`Client::decode`] turns it into one. A non-2xx
//! answer becomes [`ClientError::Api`] carrying the status and the server's `error` message;
//! a switch that is not listening becomes [`ClientError::Connect`] naming the address tried.

use std::io::ErrorKind;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tables::EntryJson;

use crate::api::{ActionJson, BatchJson, BatchOp};

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the address (switch not running, wrong address or port).
    #[error("cannot connect to the switch API at {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: ureq::Error,
    },
    /// The server answered with a non-2xx status; `message` is its `error` text.
    #[error("{method} {path}: HTTP {status}: {message}")]
    Api {
        method: &'static str,
        path: String,
        status: u16,
        message: String,
    },
    /// The request failed after connecting (timeout, reset, protocol error).
    #[error("{method} {path}: {source}")]
    Transport {
        method: &'static str,
        path: String,
        #[source]
        source: ureq::Error,
    },
    /// The server's answer was not the JSON document expected.
    #[error("{method} {path}: unexpected answer: {message}")]
    Decode {
        method: &'static str,
        path: String,
        message: String,
    },
}

impl ClientError {
    /// The HTTP status of an [`ClientError::Api`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result alias of the client.
pub type ClientResult<T> = std::result::Result<T, ClientError>;

#[derive(Debug, Clone, Copy)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// A blocking API client. Cheap to clone (connections are pooled per client).
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

/// Percent-encodes one path segment (table names may hold characters such as `/`).
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client of the server at `base_url` (`http://127.0.0.1:5000`; a bare `host:port` is
    /// taken as http). Requests time out after 30 s.
    pub fn new(base_url: &str) -> Client {
        let base = base_url.trim().trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_owned()
        } else {
            format!("http://{base}")
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Client { base, agent }
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// host:port of the server, for connection errors.
    fn addr(&self) -> String {
        let rest = self.base.split_once("://").map_or(&*self.base, |(_, r)| r);
        rest.split('/').next().unwrap_or(rest).to_owned()
    }

    /// Sends a request; returns the status and the body text whatever the status.
    fn raw(&self, m: Method, path: &str, body: Option<&Value>) -> ClientResult<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let res = match (m, body) {
            (Method::Get, _) => self.agent.get(&url).call(),
            (Method::Post, Some(b)) => self.agent.post(&url).send_json(b),
            (Method::Post, None) => self.agent.post(&url).send_empty(),
            (Method::Put, Some(b)) => self.agent.put(&url).send_json(b),
            (Method::Put, None) => self.agent.put(&url).send_empty(),
            (Method::Delete, Some(b)) => self.agent.delete(&url).force_send_body().send_json(b),
            (Method::Delete, None) => self.agent.delete(&url).call(),
        };
        let transport = |source: ureq::Error| {
            let refused = match &source {
                ureq::Error::Io(e) => matches!(
                    e.kind(),
                    ErrorKind::ConnectionRefused
                        | ErrorKind::AddrNotAvailable
                        | ErrorKind::HostUnreachable
                        | ErrorKind::NetworkUnreachable
                ),
                ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
                _ => false,
            };
            if refused {
                ClientError::Connect {
                    addr: self.addr(),
                    source,
                }
            } else {
                ClientError::Transport {
                    method: m.as_str(),
                    path: path.to_owned(),
                    source,
                }
            }
        };
        let mut resp = res.map_err(transport)?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(transport)?;
        Ok((status, text))
    }

    /// Sends a request and decodes a 2xx answer as `T`; anything else is an error.
    fn call<T: DeserializeOwned>(
        &self,
        m: Method,
        path: &str,
        body: Option<&Value>,
    ) -> ClientResult<T> {
        let (status, text) = self.raw(m, path, body)?;
        if !(200..300).contains(&status) {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| {
                    if text.trim().is_empty() {
                        "(no message)".to_owned()
                    } else {
                        text.trim().to_owned()
                    }
                });
            return Err(ClientError::Api {
                method: m.as_str(),
                path: path.to_owned(),
                status,
                message,
            });
        }
        serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            method: m.as_str(),
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    fn to_value(v: &impl serde::Serialize) -> Value {
        // Our request types serialize to JSON unconditionally (string keys, no maps of
        // non-string keys); a failure would be a bug, so send null and let the server refuse.
        serde_json::to_value(v).unwrap_or(Value::Null)
    }

    /// Every table with its size, entry count and hit/miss totals
    /// (a list of [`TableSummary`](crate::api::TableSummary)).
    pub fn tables(&self) -> ClientResult<Value> {
        self.call(Method::Get, "/api/v1/tables", None)
    }

    /// Schema and live numbers of one table ([`TableInfo`](crate::api::TableInfo)).
    pub fn table(&self, name: &str) -> ClientResult<Value> {
        self.call(
            Method::Get,
            &format!("/api/v1/tables/{}", segment(name)),
            None,
        )
    }

    /// Entries of a table with their counters, in insertion order (a list of [`EntryInfo`](crate::api::EntryInfo)).
    pub fn entries(&self, name: &str) -> ClientResult<Value> {
        self.call(Method::Get, &Self::entries_path(name), None)
    }

    fn entries_path(name: &str) -> String {
        format!("/api/v1/tables/{}/entries", segment(name))
    }

    /// Installs a new entry; returns it as installed, canonical key ([`EntryInfo`](crate::api::EntryInfo)).
    pub fn insert(&self, name: &str, e: &EntryJson) -> ClientResult<Value> {
        self.call(
            Method::Post,
            &Self::entries_path(name),
            Some(&Self::to_value(e)),
        )
    }

    /// Changes the action of an existing entry, counters kept; returns it ([`EntryInfo`](crate::api::EntryInfo)).
    pub fn modify(&self, name: &str, e: &EntryJson) -> ClientResult<Value> {
        self.call(
            Method::Put,
            &Self::entries_path(name),
            Some(&Self::to_value(e)),
        )
    }

    /// Removes the entry with this key; returns `{"status", "deleted": EntryInfo}` (the
    /// entry with its final counters).
    pub fn delete(&self, name: &str, key: &Map<String, Value>) -> ClientResult<Value> {
        self.call(
            Method::Delete,
            &Self::entries_path(name),
            Some(&json!({ "key": key })),
        )
    }

    /// Applies `ops` all-or-nothing; returns `{"status", "applied": n}`.
    pub fn batch(&self, name: &str, ops: &[BatchOp]) -> ClientResult<Value> {
        let path = format!("{}/batch", Self::entries_path(name));
        let body = Self::to_value(&BatchJson { ops: ops.to_vec() });
        self.call(Method::Post, &path, Some(&body))
    }

    /// Removes every entry of a table; returns `{"status", "removed": n}`.
    pub fn clear(&self, name: &str) -> ClientResult<Value> {
        let path = format!("{}/all", Self::entries_path(name));
        self.call(Method::Delete, &path, None)
    }

    /// Sets the action a table takes on a miss; returns it as now in force ([`ActionJson`]).
    pub fn set_default(
        &self,
        name: &str,
        action: &str,
        params: &Map<String, Value>,
    ) -> ClientResult<Value> {
        let body = Self::to_value(&ActionJson {
            action: action.to_owned(),
            params: params.clone(),
        });
        let path = format!("/api/v1/tables/{}/default", segment(name));
        self.call(Method::Put, &path, Some(&body))
    }

    /// Every port with its counters (a list of [`PortJson`](crate::api::PortJson)).
    pub fn ports(&self) -> ClientResult<Value> {
        self.call(Method::Get, "/api/v1/ports", None)
    }

    /// One port with its counters ([`PortJson`](crate::api::PortJson)).
    pub fn port(&self, id: u16) -> ClientResult<Value> {
        self.call(Method::Get, &format!("/api/v1/ports/{id}"), None)
    }

    /// The pipeline's stages in order, with their tables (a list of [`StageJson`](crate::api::StageJson)).
    pub fn pipeline(&self) -> ClientResult<Value> {
        self.call(Method::Get, "/api/v1/pipeline", None)
    }

    /// The IP-TFS stage's SAs with their counters (`{"sas": [...]}`); 404 when the pipeline
    /// has no `iptfs` stage.
    pub fn iptfs(&self) -> ClientResult<Value> {
        self.call(Method::Get, "/api/v1/iptfs", None)
    }

    /// Decodes an answer into its typed form from [`crate::api`], e.g.
    /// `Client::decode::<Vec<TableSummary>>(c.tables()?)`.
    pub fn decode<T: DeserializeOwned>(v: Value) -> ClientResult<T> {
        serde_json::from_value(v).map_err(|e| ClientError::Decode {
            method: "decode",
            path: std::any::type_name::<T>().to_owned(),
            message: e.to_string(),
        })
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> ClientResult<String> {
        let (status, text) = self.raw(Method::Get, "/metrics", None)?;
        if (200..300).contains(&status) {
            Ok(text)
        } else {
            Err(ClientError::Api {
                method: "GET",
                path: "/metrics".into(),
                status,
                message: text,
            })
        }
    }

    /// POSTs `body` to a p4containerflow endpoint (`"/addForward"`, ...) and returns the
    /// status and JSON answer as they are, error statuses included, since scripts driving
    /// the compatible API inspect both.
    pub fn compat(&self, path: &str, body: &Value) -> ClientResult<(u16, Value)> {
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let (status, text) = self.raw(Method::Post, &path, Some(body))?;
        let v = serde_json::from_str(&text).map_err(|e| ClientError::Decode {
            method: "POST",
            path: path.clone(),
            message: format!("{e} (body: {})", text.trim()),
        })?;
        Ok((status, v))
    }
}
