pub mod cli;
pub mod kernel;
pub mod net;
pub mod packet;
