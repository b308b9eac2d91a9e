//! The queue bound: how many requests are admitted and not yet finished. A request holds a
//! [`Slot`] from admission until its response is complete or dropped (the client went away, the
//! engine failed), so every path gives its place back.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::ApiError;

#[derive(Debug)]
pub(crate) struct Admission {
    in_flight: AtomicUsize,
    /// 0: no limit.
    max: usize,
}

/// One admitted request's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Admission>);

impl Admission {
    pub fn new(max: usize) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes a place, or says the server is busy (503 with Retry-After).
    pub fn admit(self: &Arc<Self>) -> Result<Slot, ApiError> {
        let max = self.max;
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (max == 0 || n < max).then_some(n + 1)
            })
            .map(|_| Slot(self.clone()))
            .map_err(|_| ApiError::busy(max))
    }

    /// Requests admitted and not yet answered (for `/metrics`).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_and_given_back() {
        let a = Arc::new(Admission::new(2));
        let one = a.admit().unwrap();
        let two = a.admit().unwrap();
        let e = a.admit().unwrap_err();
        assert_eq!(e.status.as_u16(), 503);
        assert_eq!(a.in_flight(), 2);
        drop(one);
        let three = a.admit().unwrap();
        drop((two, three));
        assert_eq!(a.in_flight(), 0);

        let unlimited = Arc::new(Admission::new(0));
        let slots: Vec<_> = (0..100).map(|_| unlimited.admit().unwrap()).collect();
        assert_eq!(unlimited.in_flight(), 100);
        drop(slots);
        assert_eq!(unlimited.in_flight(), 0);
    }
}
