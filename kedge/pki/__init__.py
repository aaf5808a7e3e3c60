"""kedge.pki"""
