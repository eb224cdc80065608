pub mod net;
pub mod packet;
