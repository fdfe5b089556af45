//! The request side of the loopback HTTP upstreams the tests run: just enough HTTP/1.1
//! to read one request (request line, headers, a `content-length` body) at a time.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;

/// One request as a loopback upstream sees it.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    pub path: String,
    pub key: String,
    pub body: serde_json::Value,
}

/// Read the next request of a connection; `None` at its end or on garbage.
pub fn read_request(r: &mut BufReader<TcpStream>) -> Option<HttpRequest> {
    let mut key = String::new();
    let mut len = 0usize;
    let mut line = String::new();
    r.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let path = line.split_whitespace().nth(1)?.to_string();
    loop {
        line.clear();
        r.read_line(&mut line).ok().filter(|n| *n > 0)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "idempotency-key" => key = value.trim().to_string(),
            "content-length" => len = value.trim().parse().ok()?,
            _ => {}
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    // A request without a body (a `GET`) has a null one.
    let body = match len {
        0 => serde_json::Value::Null,
        _ => serde_json::from_slice(&body).ok()?,
    };
    Some(HttpRequest { path, key, body })
}
