//! TEMPORARY stand-in until the stun branch is merged.
use std::net::IpAddr;
#[derive(Debug)]
pub struct Responder;
impl Responder {
    pub fn start(_: IpAddr, _: IpAddr, _: [u16; 2]) -> crate::Result<Responder> {
        Ok(Responder)
    }
}
