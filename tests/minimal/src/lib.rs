//! Tests written against netns-harness without its optional features.

#[cfg(test)]
mod tests {
    use netns_harness::prelude::*;

    #[netns_test]
    fn a_plain_body(net: Net) {
        assert_ne!(net.addr(), net.gateway());
    }

    #[netns_test(timeout = "5s")]
    async fn an_async_body() {}
}
