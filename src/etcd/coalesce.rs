//! One write per request: ureq hands a request's head and its body to the transport separately,
//! which puts two segments on the wire (two TLS records with TLS) and costs etcd's HTTP server a
//! second read and wake-up per request. [`Coalesce`], the last link of the connector chain, holds
//! what is transmitted until the transport is asked to wait for input (the request is complete),
//! or until it would no longer fit the output buffer, and then writes it at once.
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
    /// Writes what is held, in one transmission of the inner transport.
    fn flush(&mut self, timeout: NextTimeout) -> Result<(), ureq::Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let amount = self.pending.len();
        self.inner.buffers().output()[..amount].copy_from_slice(&self.pending);
        self.pending.clear();
        self.inner.transmit_output(amount, timeout)
    }
}

impl<T: Transport> Transport for Coalesce<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let room = self.inner.buffers().output().len();
        if self.pending.len() + amount > room {
            self.flush(timeout)?;
        }
        let output = self.inner.buffers().output();
        self.pending.extend_from_slice(&output[..amount]);
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
