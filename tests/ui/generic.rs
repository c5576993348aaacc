use netns_harness::netns_test;

#[netns_test]
fn a_test<T: Default>() {
    let _ = T::default();
}

fn main() {
    a_test::<u8>();
}
