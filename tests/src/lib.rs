pub mod chain;
pub mod cli;
pub mod fuzz;
pub mod kernel;
pub mod net;
pub mod packet;
pub mod registrar;
pub mod sipp;
