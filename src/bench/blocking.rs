//! A plain blocking HTTP client for the few requests made outside the load
//! (fixture setup, `/metrics` scrapes). One connection per request keeps it
//! simple; these requests are never measured.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::http1;

#[derive(Clone, Debug)]
pub struct BlockingClient {
    pub addr: SocketAddr,
    pub host: String,
    pub token: Option<String>,
    pub timeout: Duration,
}

impl BlockingClient {
    /// Returns the status and the (de-chunked) body.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> io::Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let mut req = Vec::new();
        http1::write_request(&mut req, method, path, &self.host, self.token.as_deref(), body);
        stream.write_all(&req)?;
        let mut buf = vec![0; 16 * 1024];
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let n = stream.read(&mut buf[filled..])?;
            filled += n;
            if let Some(r) = http1::parse_response(&mut buf[..filled], method == "HEAD", n == 0)? {
                return Ok((r.status, buf[r.body].to_vec()));
            }
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}
