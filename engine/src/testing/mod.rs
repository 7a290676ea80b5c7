//! What tests and the fuzz targets use and the commands never do: the
//! property checks of the format's rules ([`props`]).

pub mod props;
