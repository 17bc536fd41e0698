/* A stand-in bcryptprimitives.dll for Wine 8, which lacks it. Rust's standard library
 * asks bcryptprimitives!ProcessPrng for randomness; Windows 10 and later have it, Wine 8
 * does not, and the program then exits with code 53 before printing anything. This DLL
 * exports ProcessPrng and forwards it to bcrypt!BCryptGenRandom with the system RNG.
 * Built and copied into the Wine prefix by scripts/windows/wine-run; tests only, it never
 * ships with the agent. */
#include <windows.h>

typedef LONG(WINAPI *gen_random_fn)(void *, unsigned char *, ULONG, ULONG);

#define BCRYPT_USE_SYSTEM_PREFERRED_RNG 0x00000002

__declspec(dllexport) BOOL WINAPI ProcessPrng(unsigned char *data, SIZE_T len)
{
    static gen_random_fn gen;
    if (!gen) {
        HMODULE bcrypt = LoadLibraryA("bcrypt.dll");
        if (!bcrypt)
            return FALSE;
        gen = (gen_random_fn)(void *)GetProcAddress(bcrypt, "BCryptGenRandom");
        if (!gen)
            return FALSE;
    }
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (gen(NULL, data, n, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
