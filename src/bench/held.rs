//! How many connections the generator really holds open: a connection
//! counts when its socket is open and the server has not closed its side.

use std::cell::Cell;
use std::os::fd::RawFd;

/// Connections among `fds` (-1: closed on our side) that are open on both
/// sides now. Never blocks: one `poll` with a zero timeout.
pub fn count_open(fds: &[std::rc::Rc<Cell<RawFd>>]) -> u64 {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|fd| fd.get())
        .filter(|&fd| fd >= 0)
        .map(|fd| libc::pollfd { fd, events: libc::POLLRDHUP, revents: 0 })
        .collect();
    if polled.is_empty() {
        return 0;
    }
    // SAFETY: `polled` is a valid array of its length; timeout 0 never blocks.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, 0) };
    if n < 0 {
        return 0;
    }
    let gone = libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL;
    polled.iter().filter(|p| p.revents & gone == 0).count() as u64
}

/// Says loudly when a run held fewer connections than asked.
pub fn shortfall(asked: usize, at_start: u64, at_end: u64) -> Option<String> {
    let asked = asked as u64;
    (at_start < asked || at_end < asked).then(|| {
        format!(
            "held fewer connections than asked: {at_start} of {asked} open at the start of the measured window, \
             {at_end} at its end"
        )
    })
}
