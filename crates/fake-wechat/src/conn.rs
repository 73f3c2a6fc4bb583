//! Connections a handler can cut: the listener the fake serves on hands every request a switch
//! ([`Cut`]) that closes its TCP connection with a reset instead of the answer
//! (`lostReplyMode: "reset"`).
//!
//! This module owns only the listener wrapper and the switch. It must not decide when to cut
//! (that is `state`'s fault roll) nor touch connections other than the one asking.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener whose connections can be cut by their handler.
pub(crate) struct CutListener(pub TcpListener);

impl Listener for CutListener {
    type Io = CutIo;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.0).await;
        let io = CutIo {
            stream,
            cut: Arc::new(AtomicBool::new(false)),
            lingering: false,
        };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A connection that fails every read and write once cut, so the server drops it; dropped
/// with `SO_LINGER` 0, it sends a TCP reset, not a graceful close.
pub(crate) struct CutIo {
    stream: TcpStream,
    cut: Arc<AtomicBool>,
    lingering: bool,
}

impl CutIo {
    /// `Some(error)` once cut (after arranging the reset).
    fn refused(&mut self) -> Option<io::Error> {
        if !self.cut.load(Ordering::Acquire) {
            return None;
        }
        if !self.lingering {
            self.lingering = true;
            // Best effort: without it the close is a FIN, still no answer.
            let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
        }
        Some(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "connection cut by the fake (lostReplyMode: reset)",
        ))
    }
}

impl AsyncRead for CutIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.refused() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CutIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.refused() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.refused() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.refused() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.refused() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The switch of the connection a request came on (axum `ConnectInfo`).
#[derive(Clone)]
pub(crate) struct Cut(Arc<AtomicBool>);

impl Cut {
    /// From now on the connection fails: the answer being written is never sent.
    pub fn cut(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Connected<IncomingStream<'_, CutListener>> for Cut {
    fn connect_info(stream: IncomingStream<'_, CutListener>) -> Self {
        Cut(stream.io().cut.clone())
    }
}
