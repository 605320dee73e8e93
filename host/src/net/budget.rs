//! A byte budget shared by everything a lane holds for requests and messages still
//! arriving (HTTP bodies, partial WebSocket messages, static files on their way out), so
//! that many slow clients together cannot grow a lane without bound. A [`Charge`] holds
//! part of the budget and gives it back when dropped.

use std::cell::Cell;
use std::rc::Rc;

/// Bytes a lane may hold for what is still arriving.
#[derive(Debug)]
pub struct ByteBudget {
    used: Cell<usize>,
    limit: usize,
}

impl ByteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Rc<ByteBudget> {
        Rc::new(ByteBudget {
            used: Cell::new(0),
            limit,
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Part of a [`ByteBudget`], held by one request or connection.
#[derive(Debug)]
pub struct Charge {
    budget: Rc<ByteBudget>,
    held: usize,
}

impl Charge {
    /// A charge of nothing yet.
    pub fn new(budget: &Rc<ByteBudget>) -> Charge {
        Charge {
            budget: budget.clone(),
            held: 0,
        }
    }

    /// Holds `bytes` in all, more or less than before. Returns `false`, holding what it
    /// held, when the budget cannot give that much.
    pub fn resize(&mut self, bytes: usize) -> bool {
        let others = self.budget.used.get() - self.held;
        if bytes > self.held && others + bytes > self.budget.limit {
            return false;
        }
        self.budget.used.set(others + bytes);
        self.held = bytes;
        true
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.set(self.budget.used.get() - self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_share_the_limit_and_give_back_on_drop() {
        let budget = ByteBudget::new(100);
        let mut a = Charge::new(&budget);
        let mut b = Charge::new(&budget);
        assert!(a.resize(60));
        assert!(!b.resize(41));
        assert!(b.resize(40));
        assert_eq!(budget.used(), 100);
        // Shrinking always works; growing past the limit leaves the charge as it was.
        assert!(a.resize(10));
        assert!(!a.resize(70));
        assert_eq!(a.held(), 10);
        drop(b);
        assert_eq!(budget.used(), 10);
        drop(a);
        assert_eq!(budget.used(), 0);
    }
}
