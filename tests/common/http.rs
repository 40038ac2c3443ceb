//! A plain HTTP/1.1 client over the daemon's Unix socket, as an integrator
//! without licagent's own client would write it: raw bytes, so that the
//! tests see exactly what goes over the socket (status, headers, body).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub struct Answer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The error code of an error answer.
    pub fn code(&self) -> String {
        let v = self.json();
        v["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code in {v}"))
            .to_string()
    }
}

fn connect(socket: &Path) -> UnixStream {
    let s = UnixStream::connect(socket).expect("connect to the API socket");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn write_request(
    s: &mut UnixStream,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: licagent\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
}

/// Status line and headers.
fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("header line");
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    (status, headers)
}

/// One request on a new connection; the answer must carry Content-Length
/// (every answer but the event stream does, docs/api.md).
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut s = connect(socket);
    write_request(&mut s, method, path, headers, body);
    let mut r = BufReader::new(s);
    let (status, headers) = read_head(&mut r);
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().expect("content-length"))
        .unwrap_or_else(|| panic!("{method} {path}: no Content-Length in {headers:?}"));
    let mut body = vec![0; len];
    r.read_exact(&mut body).expect("body");
    Answer {
        status,
        headers,
        body,
    }
}

pub fn get(socket: &Path, path: &str) -> Answer {
    request(socket, "GET", path, &[], b"")
}

pub fn post_json(socket: &Path, method: &str, path: &str, body: &serde_json::Value) -> Answer {
    let bytes = serde_json::to_vec(body).unwrap();
    request(
        socket,
        method,
        path,
        &[("Content-Type", "application/json")],
        &bytes,
    )
}

/// An open event stream.
pub struct Events {
    reader: BufReader<UnixStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<u64>,
    pub event: String,
    pub data: serde_json::Value,
}

impl Events {
    /// `GET path` (e.g. `/v1/events`), with extra headers such as Last-Event-ID.
    pub fn open(socket: &Path, path: &str, headers: &[(&str, &str)]) -> Events {
        let mut s = connect(socket);
        write_request(&mut s, "GET", path, headers, b"");
        let mut reader = BufReader::new(s);
        let (status, headers) = read_head(&mut reader);
        Events {
            reader,
            status,
            headers,
        }
    }

    /// The next event (comments such as pings are skipped). The body is
    /// chunked: chunk-size lines are skipped too, as they are no `field:`.
    pub fn next(&mut self) -> Event {
        let mut id = None;
        let mut event = String::from("message");
        let mut data = String::new();
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.reader.read_line(&mut line).expect("event stream");
            assert!(n > 0, "the event stream ended");
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if !data.is_empty() {
                    let data = serde_json::from_str(&data)
                        .unwrap_or_else(|e| panic!("event data not JSON ({e}): {data}"));
                    return Event { id, event, data };
                }
                continue;
            }
            if let Some(v) = l.strip_prefix("id: ") {
                id = v.parse().ok();
            } else if let Some(v) = l.strip_prefix("event: ") {
                event = v.to_string();
            } else if let Some(v) = l.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    }
}
