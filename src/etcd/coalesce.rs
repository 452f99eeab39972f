//! One write per request: ureq hands a request's head and its body to the transport separately,
//! which puts two segments on the wire (two TLS records with TLS) and costs etcd's HTTP server a
//! second read and wake-up per request. [`Coalesce`], the last link of the connector chain, holds
//! what is transmitted until the transport is asked to wait for input (the request is complete),
//! or until it fills the output buffer, and then writes it at once.
//!
//! Rule: nothing is held across a wait for input, so a request is never delayed past its own end.

use std::fmt;

use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// The connector: wraps whatever the chain before it made.
#[derive(Debug, Default)]
pub(crate) struct CoalesceConnector;

impl<In: Transport> Connector<In> for CoalesceConnector {
    type Out = Coalesce<In>;

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        Ok(chained.map(|inner| Coalesce {
            inner,
            pending: Vec::new(),
        }))
    }
}

/// A transport whose writes are held until the next wait for input.
pub(crate) struct Coalesce<T> {
    inner: T,
    pending: Vec<u8>,
}

impl<T> fmt::Debug for Coalesce<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesce")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl<T: Transport> Coalesce<T> {
    /// Writes what is held: in one transmission of the inner transport when it fits its output
    /// buffer (every request of the election does), else in pieces of that size.
    fn flush(&mut self, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let room = self.inner.buffers().output().len();
        let mut sent = 0;
        while sent < self.pending.len() {
            let amount = room.min(self.pending.len() - sent);
            self.inner.buffers().output()[..amount]
                .copy_from_slice(&self.pending[sent..sent + amount]);
            self.inner.transmit_output(amount, timeout)?;
            sent += amount;
        }
        self.pending.clear();
        Ok(())
    }
}

impl<T: Transport> Transport for Coalesce<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        // Held first: the output buffer is about to be reused for what comes next.
        let output = self.inner.buffers().output();
        let room = output.len();
        self.pending.extend_from_slice(&output[..amount]);
        if self.pending.len() >= room {
            self.flush(timeout)?;
        }
        Ok(())
    }

    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.flush(timeout)?;
        self.inner.maybe_await_input(timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.flush(timeout)?;
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}
