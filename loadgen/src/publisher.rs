//! Publishing at a target rate: Crier's HTTP API, straight into Redis, or a raw HTTP POST
//! (Nchan). Each of `--publish-concurrency` tasks owns one keep-alive connection and the
//! channels congruent to its number, so every channel's messages are sent one after another and
//! their order is defined (unless there are more tasks than channels: then tasks share a
//! channel); the tasks' schedules interleave to give the asked rate overall.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper_util::rt::TokioIo;
use protocol::{Facility, KeyPrefix, Name};

use crate::config::{Audience, Config, PublishVia};
use crate::histogram::{Histogram, FINE_BITS};
use crate::message::{self, Stamp};

/// Longest one publish request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What one phase of publishing did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Successful publishes per channel index.
    pub published: Vec<u32>,
    pub ok: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, (u64, String)>,
    /// How late each publish left compared with its schedule (µs).
    pub lag: Histogram,
    /// From the first scheduled publish to the last answer.
    pub elapsed: Duration,
    /// Publishes never sent because the phase ran out of time.
    pub skipped: u64,
}

pub struct Publisher {
    cfg: Rc<Config>,
    http: Option<HttpEndpoint>,
    redis: Option<redis::aio::MultiplexedConnection>,
    prefix: KeyPrefix,
    facility: Facility,
}

#[derive(Clone)]
struct HttpEndpoint {
    connect: Connect,
    host: HeaderValue,
    /// Path and query, `{channel}` still in it.
    path: String,
    /// `Bearer <token>` for Crier's API, made once.
    authorization: Option<HeaderValue>,
}

/// Where an HTTP publisher's connections go.
#[derive(Clone)]
enum Connect {
    Tcp(SocketAddr),
    /// `--publish-unix-socket`.
    Unix(std::path::PathBuf),
}

impl Connect {
    /// A new keep-alive HTTP/1 connection, its driver spawned on this thread.
    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, (String, String)> {
        let refused = |e: std::io::Error| ("connect".to_owned(), e.to_string());
        match self {
            Connect::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await.map_err(refused)?;
                let _ = stream.set_nodelay(true);
                handshake(stream).await
            }
            Connect::Unix(path) => handshake(tokio::net::UnixStream::connect(path).await.map_err(refused)?).await,
        }
    }
}

/// HTTP/1 over `stream`, the connection's driver spawned on this thread.
async fn handshake<S>(stream: S) -> Result<SendRequest<Full<Bytes>>, (String, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ("handshake".to_owned(), e.to_string()))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The body of one request to Crier's publish API, serialized from borrowed strings (no JSON
/// value built per request: the load generator shares the machine with the server it measures,
/// so its own work per publish is kept small).
#[derive(serde::Serialize)]
struct ApiRequest<'a> {
    facility: &'a str,
    message: &'a str,
    expire: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    users: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    broadcast: bool,
}

/// The API request publishing `message` to `user`'s channel, or to broadcast without one.
fn api_body(facility: &str, user: Option<&str>, message: &str) -> String {
    let request = ApiRequest { facility, message, expire: 0, users: user.map(|u| [u]), broadcast: user.is_none() };
    serde_json::to_string(&request).expect("strings always serialize")
}

impl Publisher {
    pub async fn new(cfg: Rc<Config>) -> anyhow::Result<Publisher> {
        let prefix = KeyPrefix::new(&cfg.prefix).map_err(|e| anyhow::anyhow!("--prefix: {e}"))?;
        let facility = Facility::parse(&cfg.facility).map_err(|e| anyhow::anyhow!("--facility: {e}"))?;
        let mut http = None;
        let mut redis = None;
        match cfg.publish {
            PublishVia::Api | PublishVia::Http => {
                let url = cfg.publish_url.replace("{channel}", "CHANNEL");
                let rest = url.strip_prefix("http://").context("--publish-url must be http://")?;
                let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
                let connect = match &cfg.publish_unix_socket {
                    Some(path) => Connect::Unix(path.clone()),
                    None => {
                        let target =
                            crate::client::Target::parse(&format!("ws://{authority}/")).map_err(anyhow::Error::msg)?;
                        Connect::Tcp(target.resolve().await.map_err(anyhow::Error::msg)?)
                    }
                };
                let authorization = match cfg.publish {
                    PublishVia::Api => Some(
                        HeaderValue::try_from(format!("Bearer {}", cfg.publish_token))
                            .context("--publish-token must be printable ASCII")?,
                    ),
                    _ => None,
                };
                http = Some(HttpEndpoint {
                    connect,
                    host: HeaderValue::try_from(authority).context("--publish-url host")?,
                    path: path.replace("CHANNEL", "{channel}"),
                    authorization,
                });
            }
            PublishVia::Redis => {
                let client = redis::Client::open(cfg.redis_url.as_str()).context("--redis-url")?;
                let conn = tokio::time::timeout(REQUEST_TIMEOUT, client.get_multiplexed_async_connection())
                    .await
                    .context("connecting to redis timed out")?
                    .context("connecting to redis")?;
                redis = Some(conn);
            }
            PublishVia::None => {}
        }
        Ok(Publisher { cfg, http, redis, prefix, facility })
    }

    /// Publishes `rate` × `duration` messages of phase `phase`, numbered from `seq_base`.
    pub async fn run_phase(&self, phase: u32, rate: f64, duration: Duration, seq_base: u64) -> Outcome {
        let channels = self.cfg.channels;
        let outcome = Rc::new(RefCell::new(Outcome {
            published: vec![0; channels],
            ok: 0,
            errors: 0,
            error_kinds: BTreeMap::new(),
            lag: Histogram::new(FINE_BITS),
            elapsed: Duration::ZERO,
            skipped: 0,
        }));
        let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
        let tasks = self.cfg.publish_concurrency().max(1) as u64;
        let start = Instant::now() + Duration::from_millis(20);
        let phase_deadline = start + duration + REQUEST_TIMEOUT + Duration::from_secs(5);
        let mut handles = Vec::new();
        for j in 0..tasks {
            let count = total / tasks + u64::from(j < total % tasks);
            let task = Task {
                publisher: self.clone_parts(),
                outcome: outcome.clone(),
                j,
                tasks,
                count,
                rate,
                start,
                deadline: phase_deadline,
                phase,
                seq_base,
            };
            handles.push(tokio::task::spawn_local(task.run()));
        }
        for h in handles {
            let _ = tokio::time::timeout_at((phase_deadline + Duration::from_secs(1)).into(), h).await;
        }
        let mut o = outcome.borrow().clone();
        o.elapsed = start.elapsed();
        o.skipped = total.saturating_sub(o.ok + o.errors);
        o
    }

    fn clone_parts(&self) -> Parts {
        Parts {
            cfg: self.cfg.clone(),
            http: self.http.clone(),
            redis: self.redis.clone(),
            prefix: self.prefix.clone(),
            facility: self.facility.clone(),
        }
    }
}

#[derive(Clone)]
struct Parts {
    cfg: Rc<Config>,
    http: Option<HttpEndpoint>,
    redis: Option<redis::aio::MultiplexedConnection>,
    prefix: KeyPrefix,
    facility: Facility,
}

struct Task {
    publisher: Parts,
    outcome: Rc<RefCell<Outcome>>,
    j: u64,
    tasks: u64,
    count: u64,
    rate: f64,
    start: Instant,
    deadline: Instant,
    phase: u32,
    seq_base: u64,
}

/// splitmix64: a tiny, good-enough generator for picking channels.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The channel of publish `k` of task `j`: random among the channels congruent to `j`.
fn pick_channel(channels: u64, tasks: u64, j: u64, k: u64, seq: u64) -> u64 {
    if channels <= tasks {
        // Several publishers share each channel (more publishers than channels).
        return j % channels.max(1);
    }
    let mine = (channels - j).div_ceil(tasks);
    j + tasks * (mix(seq ^ (k << 32)) % mine)
}

impl Task {
    async fn run(self) {
        let p = &self.publisher;
        let mut http: Option<SendRequest<Full<Bytes>>> = None;
        let mut redis = p.redis.clone();
        for k in 0..self.count {
            let slot = k * self.tasks + self.j;
            let scheduled = self.start + Duration::from_secs_f64(slot as f64 / self.rate);
            if scheduled > self.deadline {
                break;
            }
            tokio::time::sleep_until(scheduled.into()).await;
            let seq = self.seq_base + slot;
            let ch = pick_channel(p.cfg.channels as u64, self.tasks, self.j, k, seq) as usize;
            let lag = scheduled.elapsed();
            let payload = message::encode(
                Stamp { phase: self.phase, seq, channel: ch as u32, sent_us: message::now_us() },
                p.cfg.size,
            );
            let result = match p.cfg.publish {
                PublishVia::Api | PublishVia::Http => self.send_http(&mut http, ch, payload).await,
                PublishVia::Redis => match redis.as_mut() {
                    Some(conn) => self.send_redis(conn, ch, payload).await,
                    None => Err(("redis".into(), "no connection".into())),
                },
                PublishVia::None => Ok(()),
            };
            let mut o = self.outcome.borrow_mut();
            o.lag.record(lag.as_micros() as u64);
            match result {
                Ok(()) => {
                    o.ok += 1;
                    o.published[ch] += 1;
                }
                Err((kind, detail)) => {
                    o.errors += 1;
                    o.error_kinds.entry(kind).or_insert((0, detail)).0 += 1;
                }
            }
        }
    }

    /// Crier's channel name for channel index `ch` (publishing straight into Redis).
    fn redis_channel(&self, ch: usize) -> String {
        let p = &self.publisher;
        match p.cfg.audience {
            Audience::User => {
                let user = Name::parse(&crate::worker::user_name(ch)).expect("generated names are valid");
                p.prefix.user(&user, &p.facility).to_string()
            }
            Audience::Broadcast => p.prefix.broadcast(&p.facility).to_string(),
            Audience::Channel => Config::channel_id(ch),
        }
    }

    async fn send_redis(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        ch: usize,
        payload: String,
    ) -> Result<(), (String, String)> {
        let cmd = redis::cmd("PUBLISH").arg(self.redis_channel(ch)).arg(payload).to_owned();
        match tokio::time::timeout(REQUEST_TIMEOUT, cmd.query_async::<i64>(conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(("redis error".into(), e.to_string())),
            Err(_) => Err(("timeout".into(), "PUBLISH unanswered".into())),
        }
    }

    async fn send_http(
        &self,
        http: &mut Option<SendRequest<Full<Bytes>>>,
        ch: usize,
        payload: String,
    ) -> Result<(), (String, String)> {
        let p = &self.publisher;
        let endpoint = p.http.as_ref().expect("http publisher has an endpoint");
        let (body, content_type, path) = match p.cfg.publish {
            PublishVia::Api => {
                let user = (p.cfg.audience == Audience::User).then(|| crate::worker::user_name(ch));
                (api_body(p.facility.as_str(), user.as_deref(), &payload), "application/json", endpoint.path.clone())
            }
            _ => (payload, "text/plain", endpoint.path.replace("{channel}", &Config::channel_id(ch))),
        };
        let attempt = async {
            if http.as_ref().is_none_or(|s| s.is_closed()) {
                *http = Some(endpoint.connect.open().await?);
            }
            let sender = http.as_mut().expect("just connected");
            sender.ready().await.map_err(|e| ("connection".to_owned(), e.to_string()))?;
            let mut req = hyper::Request::post(path.as_str())
                .header(hyper::header::HOST, endpoint.host.clone())
                .header(hyper::header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            if let Some(authorization) = &endpoint.authorization {
                req = req.header(hyper::header::AUTHORIZATION, authorization.clone());
            }
            let req = req.body(Full::new(Bytes::from(body))).map_err(|e| ("request".to_owned(), e.to_string()))?;
            let resp = sender.send_request(req).await.map_err(|e| ("request".to_owned(), e.to_string()))?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| ("body".to_owned(), e.to_string()))?.to_bytes();
            if status.is_success() {
                Ok(())
            } else {
                Err((format!("http {}", status.as_u16()), String::from_utf8_lossy(&body).chars().take(200).collect()))
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                *http = None;
                Err(e)
            }
            Err(_) => {
                *http = None;
                Err(("timeout".into(), format!("no answer within {REQUEST_TIMEOUT:?}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_bodies_are_what_the_publish_api_reads() {
        // Read by the API's own parser and resolved as webserver does (no configured prefix).
        let publication = |body: String| {
            protocol::PublishRequest::from_json(body.as_bytes())
                .and_then(|r| r.into_publication(&KeyPrefix::default(), 3600))
                .unwrap()
        };
        let to_user = publication(api_body("bench", Some("lgu7"), "a \"quoted\" msg"));
        let names: Vec<&str> = to_user.channels.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["user:lgu7:bench"]);
        assert_eq!((to_user.message.as_str(), to_user.expire), ("a \"quoted\" msg", 0));
        let to_all = publication(api_body("bench", None, "m"));
        let names: Vec<&str> = to_all.channels.iter().map(|c| c.as_str()).collect();
        assert_eq!(names, ["broadcast:bench"]);
        assert_eq!((to_all.message.as_str(), to_all.expire), ("m", 0));
    }

    #[test]
    fn channels_stay_with_their_task() {
        for (channels, tasks) in [(10_000u64, 32u64), (7, 3), (1, 1), (5, 5), (1, 4), (3, 8)] {
            let mut seen = vec![false; channels as usize];
            for j in 0..tasks {
                for k in 0..2_000 {
                    let ch = pick_channel(channels, tasks, j, k, k * tasks + j);
                    assert!(ch < channels);
                    if channels > tasks {
                        assert_eq!(ch % tasks, j);
                    } else {
                        assert_eq!(ch, j % channels);
                    }
                    seen[ch as usize] = true;
                }
            }
            if channels <= 100 {
                assert!(seen.iter().all(|s| *s));
            }
        }
    }
}
