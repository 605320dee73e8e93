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
    held: Held,
}

impl Charge {
    /// A charge of nothing yet.
    pub fn new(budget: &Rc<ByteBudget>) -> Charge {
        Charge {
            budget: budget.clone(),
            held: Held::default(),
        }
    }

    /// Holds `bytes` in all, more or less than before. Returns `false`, holding what it
    /// held, when the budget cannot give that much.
    pub fn resize(&mut self, bytes: usize) -> bool {
        self.held.resize(&self.budget, bytes)
    }

    /// Bytes held.
    pub fn held(&self) -> usize {
        self.held.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.held.release(&self.budget);
    }
}

/// A [`Charge`] without its handle on the budget, for a holder that reaches the budget
/// anyway and gives its bytes back itself ([`Held::release`]): a WebSocket's task (its
/// lane's budget), where every idle connection would keep the pointer for nothing.
#[derive(Debug, Default)]
pub struct Held {
    bytes: usize,
}

impl Held {
    /// Holds `bytes` of `budget` in all, more or less than before. Returns `false`,
    /// holding what it held, when the budget cannot give that much.
    pub fn resize(&mut self, budget: &ByteBudget, bytes: usize) -> bool {
        let others = budget.used.get() - self.bytes;
        if bytes > self.bytes && others + bytes > budget.limit {
            return false;
        }
        budget.used.set(others + bytes);
        self.bytes = bytes;
        true
    }

    /// Gives everything back to `budget`.
    pub fn release(&mut self, budget: &ByteBudget) {
        self.resize(budget, 0);
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

    #[test]
    fn bytes_held_without_a_handle_count_alike() {
        let budget = ByteBudget::new(100);
        let mut charge = Charge::new(&budget);
        let mut held = Held::default();
        assert!(charge.resize(60));
        assert!(!held.resize(&budget, 41));
        assert!(held.resize(&budget, 40));
        assert_eq!(budget.used(), 100);
        held.release(&budget);
        assert_eq!(budget.used(), 60);
    }
}
