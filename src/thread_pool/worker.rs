//! The loop each worker thread runs.

use super::registry::Registry;

pub(crate) fn main_loop(registry: &Registry) {
    if let Some(init) = &registry.initializer {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(init))
            .unwrap_or_else(|p| Err(crate::error::panic_message(p.as_ref())));
        if let Err(reason) = outcome {
            registry.mark_broken(format!("a worker's initializer failed: {reason}"));
            return;
        }
    }
    let on_ran = || registry.note_idle();
    loop {
        if registry.is_broken() {
            return;
        }
        if let Some(job) = registry.queue.pop() {
            job.run(&on_ran);
            continue;
        }
        if let Some(job) = registry
            .sleep
            .search(|| registry.queue.pop(), registry.crowded())
        {
            // Work arrives in bursts: if more is queued and nobody else is
            // looking, bring another worker in before running this one.
            if !registry.queue.is_empty() {
                registry.sleep.wake_one();
            }
            job.run(&on_ran);
            continue;
        }
        if registry.closed() {
            // Closed: nothing can be queued any more, so an empty queue stays
            // empty. One last pop covers a job queued just before closing.
            match registry.queue.pop() {
                Some(job) => {
                    job.run(&on_ran);
                    continue;
                }
                None => return,
            }
        }
        registry
            .sleep
            .sleep(|| !registry.queue.is_empty() || registry.closed() || registry.is_broken());
    }
}
