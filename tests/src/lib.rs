pub mod kernel;
pub mod net;
pub mod packet;
