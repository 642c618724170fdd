/* A shared library that is not a C module of Empath's: it has no declare_module(). */
int answer(void) { return 42; }
