//! Pooled heap slots to run a large future in, so the task that awaits it
//! stays small while the large future is not running.
//!
//! A connection's task lives as long as the connection, but the state of a
//! request in progress (parser headers, the service's future, buffers) is
//! needed only while a request is in hand. Running that part in a slot taken
//! from the shard's free list keeps an idle connection's task to a few
//! hundred bytes without an allocation per request.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// A free list of equally sized heap blocks, one shard's.
pub struct FutureSlots {
    /// Layout of every pooled block: that of the first future run here.
    layout: Cell<Option<Layout>>,
    free: RefCell<Vec<NonNull<u8>>>,
    /// Most free blocks kept; beyond it a returned block is freed.
    keep: usize,
}

impl FutureSlots {
    pub fn new(keep: usize) -> FutureSlots {
        FutureSlots { layout: Cell::new(None), free: RefCell::new(Vec::new()), keep }
    }

    /// Runs `fut` to completion in a slot (pooled when it fits the pool's
    /// block layout). Dropping the returned future drops `fut` in place.
    pub fn run<F: Future>(&self, fut: F) -> InSlot<'_, F> {
        let layout = Layout::new::<F>();
        let pool_layout = self.layout.get().unwrap_or(layout);
        self.layout.set(Some(pool_layout));
        let pooled = layout.size() <= pool_layout.size() && layout.align() <= pool_layout.align();
        let block = match (pooled, layout.size()) {
            (_, 0) => NonNull::<F>::dangling().cast(),
            (true, _) => self.free.borrow_mut().pop().unwrap_or_else(|| allocate(pool_layout)),
            (false, _) => allocate(layout),
        };
        let ptr = block.cast::<F>();
        // SAFETY: `block` is valid for writes of an `F` (sized and aligned
        // for it above) and holds nothing yet.
        unsafe { ptr.as_ptr().write(fut) };
        InSlot { slots: self, ptr, pooled }
    }

    /// Free blocks held now.
    pub fn free_blocks(&self) -> usize {
        self.free.borrow().len()
    }

    fn give_back(&self, block: NonNull<u8>, layout: Layout, pooled: bool) {
        if layout.size() == 0 {
            return;
        }
        let pool_layout = self.layout.get().expect("a block was taken");
        let mut free = self.free.borrow_mut();
        if pooled && free.len() < self.keep {
            free.push(block);
        } else {
            // SAFETY: allocated by `allocate` with this layout.
            unsafe { dealloc(block.as_ptr(), if pooled { pool_layout } else { layout }) };
        }
    }
}

impl Drop for FutureSlots {
    fn drop(&mut self) {
        if let Some(layout) = self.layout.get() {
            for block in self.free.get_mut().drain(..) {
                // SAFETY: every free block was allocated with the pool layout.
                unsafe { dealloc(block.as_ptr(), layout) };
            }
        }
    }
}

fn allocate(layout: Layout) -> NonNull<u8> {
    // SAFETY: callers pass layouts of non-zero size.
    NonNull::new(unsafe { alloc(layout) }).unwrap_or_else(|| handle_alloc_error(layout))
}

/// A future running in a slot of [`FutureSlots`].
pub struct InSlot<'a, F: Future> {
    slots: &'a FutureSlots,
    /// Points at a live `F` that never moves until it is dropped.
    ptr: NonNull<F>,
    pooled: bool,
}

impl<F: Future> Future for InSlot<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the `F` stays at `ptr` until `drop` below: it is pinned.
        unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) }.poll(cx)
    }
}

impl<F: Future> Drop for InSlot<'_, F> {
    fn drop(&mut self) {
        // SAFETY: `ptr` holds a live `F`, dropped exactly once here.
        unsafe { std::ptr::drop_in_place(self.ptr.as_ptr()) };
        self.slots.give_back(self.ptr.cast(), Layout::new::<F>(), self.pooled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn runs_futures_and_reuses_blocks() {
        let slots = FutureSlots::new(2);
        let big = [7u8; 512];
        let out = futures_lite::future::block_on(slots.run(async move { big.iter().map(|&b| b as u32).sum::<u32>() }));
        assert_eq!(out, 7 * 512);
        assert_eq!(slots.free_blocks(), 1);
        let n = futures_lite::future::block_on(slots.run(async { 5 }));
        assert_eq!((n, slots.free_blocks()), (5, 1), "a smaller future reuses the block");
    }

    #[test]
    fn keeps_at_most_keep_blocks_and_drops_unfinished_futures() {
        let slots = FutureSlots::new(1);
        let alive = Rc::new(());
        let pending: Vec<_> = (0..3)
            .map(|_| {
                let held = alive.clone();
                slots.run(async move {
                    futures_lite::future::pending::<()>().await;
                    drop(held);
                })
            })
            .collect();
        assert_eq!(Rc::strong_count(&alive), 4);
        drop(pending);
        assert_eq!(Rc::strong_count(&alive), 1, "dropping the slot drops the future in it");
        assert_eq!(slots.free_blocks(), 1);
    }

    #[test]
    fn larger_futures_than_the_block_run_unpooled() {
        let slots = FutureSlots::new(4);
        futures_lite::future::block_on(slots.run(async {}));
        assert_eq!(slots.free_blocks(), 1);
        let big = [1u8; 4096];
        let sum = futures_lite::future::block_on(slots.run(async move { big.len() }));
        assert_eq!(sum, 4096);
        assert_eq!(slots.free_blocks(), 1, "the large future's block is freed, not pooled");
    }
}
