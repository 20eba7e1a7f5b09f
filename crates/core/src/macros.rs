//! The one macro the actor crates share.

/// Declares an actor message whose handler runs one blocking store call.
///
/// Expands to the message struct, its `actix::Message` impl (`Result<$ret,
/// $error>`) and a handler on `$actor` that runs `$body` through the actor's
/// `blocking` method (a short job: see [`exec`](crate::exec)), so no store
/// call ever runs on an actor's event loop. Each actor crate wraps it in a
/// local `store_message!` that fixes the actor and the error type.
///
/// A body after `waits` may wait on something outside it (a pipe to a peer or
/// a client: see
/// [`Executor::spawn_waiting_job`](crate::exec::Executor::spawn_waiting_job))
/// and runs through the actor's `blocking_waiting` method instead; a body
/// after `waits if FIELD` does so when the message's `FIELD` (a `bool`) is
/// true, and runs as a short job otherwise.
#[macro_export]
macro_rules! store_message {
    (
        $actor:ty, $error:ty;
        $(#[$meta:meta])*
        pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty),* $(,)? }
        -> $ret:ty;
        $($how:ident)* |$store:ident, $msg:ident| $body:expr
    ) => {
        $(#[$meta])*
        pub struct $name { $($(#[$fmeta])* pub $field: $ty),* }

        impl ::actix::Message for $name {
            type Result = ::core::result::Result<$ret, $error>;
        }

        impl ::actix::Handler<$name> for $actor {
            type Result = ::actix::ResponseFuture<::core::result::Result<$ret, $error>>;

            fn handle(&mut self, $msg: $name, _: &mut Self::Context) -> Self::Result {
                #[allow(unused_mut)]
                let mut $msg = $msg;
                $crate::__store_job!(self, $msg, [$($how)*], move |$store| $body)
            }
        }
    };
}

/// The job a `store_message!` handler runs: short, waiting, or chosen by a
/// field of the message.
#[doc(hidden)]
#[macro_export]
macro_rules! __store_job {
    ($this:ident, $msg:ident, [], $job:expr) => {
        ::std::boxed::Box::pin($this.blocking($job))
    };
    ($this:ident, $msg:ident, [waits], $job:expr) => {
        ::std::boxed::Box::pin($this.blocking_waiting($job))
    };
    ($this:ident, $msg:ident, [waits if $flag:ident], $job:expr) => {
        if $msg.$flag {
            ::std::boxed::Box::pin($this.blocking_waiting($job))
        } else {
            ::std::boxed::Box::pin($this.blocking($job))
        }
    };
}
