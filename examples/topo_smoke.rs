use netns_harness::{Network, Preset, Spec, Topology};
use std::time::Duration;
fn main() -> Result<(), netns_harness::Error> {
    let t0 = std::time::Instant::now();
    let topo = Topology::builder()
        .network(Network::new("pub").preset(Preset::None))
        .network(Network::new("c").preset(Preset::Cgnat))
        .build()?;
    println!("built in {:?}: {topo:?}", t0.elapsed());
    let net = topo.network("pub")?;
    println!("pub subnet {} public {}", net.subnet(), net.public_addr());
    let out = net
        .spawn(&Spec::command("ping").args(["-c1", "-W1", "203.0.113.21"]))?
        .output(Duration::from_secs(5))?;
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let c = topo.network("c")?;
    println!("c subnet {} public {} ", c.subnet(), c.public_addr());
    let out = c
        .spawn(&Spec::command("ip").args(["route"]))?
        .output(Duration::from_secs(5))?;
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let srv = topo.internet().spawn(&Spec::command("sleep").arg("5"))?;
    println!("internet container {}", srv.addr());
    Ok(())
}
